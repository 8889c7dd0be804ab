import { apiSlice } from "../../app/api"
import type {
  AuditEntry,
  Contract,
  ContractFilters,
  ContractTerms,
  ContractVersion,
  Page,
  PartnerVersion,
  VersionDiff,
} from "./types"

/** The contracts service behind the gateway (`/api/contracts` → services/contracts). */
export const CONTRACTS_SERVICE = "/contracts"
export const CONTRACTS = `${CONTRACTS_SERVICE}/contracts`

const query = (params: Record<string, string | number | null | undefined>): string => {
  const q = new URLSearchParams()
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") q.set(k, String(v))
  const s = q.toString()
  return s ? `?${s}` : ""
}

export interface DraftBody {
  name: string
  terms: ContractTerms
  partner_ids?: string[]
  comment?: string
}

export interface EditBody {
  contractId: string
  version: number
  etag: string
  terms: ContractTerms
  effective_from?: string
  comment?: string
}

/** A partner's version has no staff fields (authors, approvals, comments, committed value): the
 * pages read them as empty. Its terms stay the partner view, which TermsView shows as such. */
function fromPartnerView(v: ContractVersion | PartnerVersion): ContractVersion {
  if (!("view" in v)) return v
  return {
    ...v, backdated: false, committed_value: null, authors: [], submitted_by: null, submitted_at: null, submission: 0,
    required_approvals: {}, approvals: [], missing_approvals: {}, decided_by: null, decision_comment: null,
    comment: null, created_at: v.effective_from, updated_at: v.effective_from,
    terms: v.terms as unknown as ContractTerms,
  }
}

export const contractsApi = apiSlice.injectEndpoints({
  endpoints: (build) => ({
    listContracts: build.query<Page<Contract>, ContractFilters>({
      query: (f) =>
        `${CONTRACTS}${query({ status: f.status, contract_type: f.contract_type, advertiser_id: f.advertiser_id, q: f.name, cursor: f.cursor, limit: f.limit ?? 20 })}`,
      providesTags: ["ContractList"],
    }),
    getContract: build.query<Contract, string>({
      query: (id) => `${CONTRACTS}/${encodeURIComponent(id)}`,
      providesTags: (_r, _e, id) => [{ type: "Contract", id }],
    }),
    listVersions: build.query<ContractVersion[], string>({
      query: (id) => `${CONTRACTS}/${encodeURIComponent(id)}/versions`,
      transformResponse: (r: { items: (ContractVersion | PartnerVersion)[] } | ContractVersion[]) =>
        (Array.isArray(r) ? r : r.items).map(fromPartnerView),
      providesTags: (_r, _e, id) => [{ type: "Contract", id }],
    }),
    diffVersions: build.query<VersionDiff, { contractId: string; from: number; to: number }>({
      query: ({ contractId, from, to }) => `${CONTRACTS}/${encodeURIComponent(contractId)}/diff${query({ from, to })}`,
      // an edit of a draft changes what it differs in
      providesTags: (_r, _e, a) => [{ type: "Contract", id: a.contractId }],
    }),
    auditTrail: build.query<AuditEntry[], string>({
      query: (id) => `${CONTRACTS}/${encodeURIComponent(id)}/audit`,
      transformResponse: (r: { items: AuditEntry[] } | AuditEntry[]) => (Array.isArray(r) ? r : r.items),
      providesTags: (_r, _e, id) => [{ type: "Contract", id }],
    }),
    draftContract: build.mutation<Contract, DraftBody>({
      query: (body) => ({ url: CONTRACTS, method: "POST", body }),
      invalidatesTags: ["ContractList"],
    }),
    editVersion: build.mutation<ContractVersion, EditBody>({
      query: ({ contractId, version, etag, ...body }) => ({
        url: `${CONTRACTS}/${encodeURIComponent(contractId)}/versions/${version}`,
        method: "PUT",
        headers: { "If-Match": etag },
        body,
      }),
      invalidatesTags: (_r, _e, a) => [{ type: "Contract", id: a.contractId }, "ContractList", "Approvals"],
    }),
    versionAction: build.mutation<
      ContractVersion,
      { contractId: string; version: number; action: "submit" | "withdraw" | "approve" | "reject"; comment?: string; etag?: string }
    >({
      query: ({ contractId, version, action, comment, etag }) => ({
        url: `${CONTRACTS}/${encodeURIComponent(contractId)}/versions/${version}/${action}`,
        method: "POST",
        headers: etag ? { "If-Match": etag } : undefined,
        body: comment ? { comment } : {},
      }),
      invalidatesTags: (_r, _e, a) => [{ type: "Contract", id: a.contractId }, "ContractList", "Approvals"],
    }),
    amendContract: build.mutation<ContractVersion, { contractId: string; terms: ContractTerms; effective_from: string; comment?: string }>({
      query: ({ contractId, ...body }) => ({ url: `${CONTRACTS}/${encodeURIComponent(contractId)}/amendments`, method: "POST", body }),
      invalidatesTags: (_r, _e, a) => [{ type: "Contract", id: a.contractId }, "ContractList", "Approvals"],
    }),
    renewContract: build.mutation<ContractVersion, { contractId: string; apply_escalator: boolean; comment?: string }>({
      query: ({ contractId, ...body }) => ({ url: `${CONTRACTS}/${encodeURIComponent(contractId)}/renew`, method: "POST", body }),
      invalidatesTags: (_r, _e, a) => [{ type: "Contract", id: a.contractId }, "ContractList", "Approvals"],
    }),
    terminateContract: build.mutation<ContractVersion, { contractId: string; effective_date: string; reason: string }>({
      query: ({ contractId, ...body }) => ({ url: `${CONTRACTS}/${encodeURIComponent(contractId)}/terminate`, method: "POST", body }),
      invalidatesTags: (_r, _e, a) => [{ type: "Contract", id: a.contractId }, "ContractList", "Approvals"],
    }),
  }),
})

export const {
  useListContractsQuery,
  useGetContractQuery,
  useListVersionsQuery,
  useDiffVersionsQuery,
  useAuditTrailQuery,
  useDraftContractMutation,
  useEditVersionMutation,
  useVersionActionMutation,
  useAmendContractMutation,
  useRenewContractMutation,
  useTerminateContractMutation,
} = contractsApi
