/** The pacing service's answers, from its OpenAPI document (src/api/pacing.ts, generated). */
import type { components } from "../../api/pacing"

type Schemas = components["schemas"]
export type Pacing = Schemas["Pacing"]
export type PacingStatus = Pacing["status"]
export type PacingList = Schemas["PacingList"]
export type Series = Schemas["Series"]
export type SeriesPoint = Schemas["SeriesPoint"]
export type Granularity = Series["granularity"]
