import type { components } from "../../api/metering"

/**
 * One partner's earnings in one contract's billing period, from metering's running totals (its
 * OpenAPI document, generated into src/api/metering.ts): its own payout lines only, provisional while open.
 */
export type Earning = components["schemas"]["Earning"]
export type EarningsList = components["schemas"]["EarningsList"]
