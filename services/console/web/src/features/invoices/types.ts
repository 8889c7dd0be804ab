/** The invoicing service's answers, from its OpenAPI document (src/api/invoicing.ts, generated). */
import type { components } from "../../api/invoicing"

type Schemas = components["schemas"]

export type DocLine = Schemas["Line"]
export type Invoice = Schemas["Invoice"]
export type Statement = Schemas["Statement"]
export type DocStatus = Invoice["status"]
export type InvoiceSummary = Schemas["InvoiceSummary"]
export type StatementSummary = Schemas["StatementSummary"]
export type ListItem = InvoiceSummary | StatementSummary
export type Lineage = Schemas["Lineage"]
