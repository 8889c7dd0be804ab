"""One typed record per Avro schema (its latest version), as ``AvroCodec.decode`` returns it.

``SchemaCatalog.codec(name, record=ImpressionRecord)`` gives a codec whose ``decode`` returns
that type and whose ``encode`` takes it, so mypy follows a record from the wire to the
database. TypedDicts cost nothing at run time: the codec still returns fastavro's plain dict,
and the wire format is the schema's alone.

What fastavro gives for each Avro type (and so what the records say): ``string`` → ``str``,
``int``/``long`` → ``int``, ``boolean`` → ``bool``, ``bytes`` → ``bytes``,
``timestamp-micros`` → an aware UTC ``datetime``, ``decimal`` → ``Decimal``, an enum → its
symbol (a ``Literal``), an array → ``list``, a map → ``dict[str, ...]``, a nested record → a
dict (its own TypedDict), ``[null, T]`` → ``T | None``. Decoding into the reader version
fills every field from the writer's data or the field's default, so every key is present
(no ``NotRequired``). ``tests/unit/streams/test_streams_records.py`` checks every TypedDict
against its ``.avsc`` and against what the codec really returns.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Literal, TypedDict

AdjustmentKind = Literal["late_event", "reversal_after_close", "ivt_credit", "backdated_amendment"]
AdjustmentLineType = Literal["cpm_impressions", "cpm_over_delivery", "cpa_conversions"]
AdjustmentPriceUnit = Literal["per_thousand", "per_unit"]
AttributedKind = Literal["conversion", "reversal"]
BudgetCapKind = Literal["per_period", "total", "cpa_amount_per_period"]
ContractType = Literal["cpm", "cpa"]
ConversionKind = Literal["conversion", "reversal"]
ConversionSource = Literal["pixel", "postback", "api"]
OutcomeConversionKind = Literal["conversion", "reversal"]
OutcomeKind = Literal["attributed", "rejected"]
RejectReason = Literal["no_exposure", "outside_window", "too_fast", "duplicate", "capped", "no_active_contract", "invalid"]
DeviceType = Literal["ctv", "mobile", "desktop", "tablet", "other"]
IvtFlag = Literal["none", "givt", "sivt"]
MeasurementSource = Literal["first_party", "third_party"]
IvtClass = Literal["givt", "sivt"]
IvtMeasurementSource = Literal["first_party", "third_party"]
IvtReportStatus = Literal["applied", "refused", "duplicate"]
ConversionStateKind = Literal["conversion", "reversal"]
ForwardedKind = Literal["attributed_conversion", "ivt_report"]
IvtDecisionStatus = Literal["applied", "refused"]
PacingAlertState = Literal["cap_exhaustion_projected", "under_pacing", "on_pace"]
ClosedContractType = Literal["cpm", "cpa"]
PeriodLineType = Literal["cpm_impressions", "cpm_over_delivery", "cpa_conversions"]
PriceUnit = Literal["per_thousand", "per_unit"]
RunningContractType = Literal["cpm", "cpa"]
RunningTotalStatus = Literal["open", "closed"]
RunningLineType = Literal["cpm_impressions", "cpm_over_delivery", "cpa_conversions"]
RunningPriceUnit = Literal["per_thousand", "per_unit"]


class AdjustmentRecord(TypedDict):
    """``adjustment`` v1 (billing.adjustments, key contract_id)."""

    adjustment_id: str
    kind: AdjustmentKind
    contract_id: str
    advertiser_id: str
    currency: str
    corrects_period_key: str
    applies_to_period_key: str
    line_type: AdjustmentLineType
    contract_version: int
    price_point: str
    event_type: str | None
    partner_id: str | None
    quantity: int
    unit: AdjustmentPriceUnit
    unit_price: Decimal
    amount_exact: Decimal
    partner_payout_exact: Decimal | None
    source_event_id: str
    source_topic: str | None
    source_partition: int | None
    source_offset: int | None
    reason: str
    created_at: datetime


class AttributedConversionRecord(TypedDict):
    """``attributed_conversion`` v2 (billing.attributed_conversions, key contract_id)."""

    conversion_id: str
    kind: AttributedKind
    original_conversion_id: str | None
    contract_id: str
    contract_version: int
    advertiser_id: str
    partner_id: str | None
    event_type: str
    event_time: datetime
    original_event_time: datetime | None
    exposure_id: str
    exposure_time: datetime
    rule: str
    currency: str
    advertiser_amount: Decimal
    partner_payout: Decimal
    decided_at: datetime
    order_value: Decimal | None
    tier_position: int | None
    reversal_completes: bool | None


class BudgetAlertRecord(TypedDict):
    """``budget_alert`` v1 (billing.budget_alerts, key contract_id)."""

    alert_id: str
    contract_id: str
    advertiser_id: str
    currency: str
    cap_kind: BudgetCapKind
    period_key: str
    threshold_pct: int
    cap: Decimal
    spent_exact: Decimal
    latest_event_time: datetime | None
    emitted_at: datetime


class ContractEventRecord(TypedDict):
    """``contract_event`` v1 (Topic contracts.events, key contract_id)."""

    event_id: str
    event_type: str
    contract_id: str
    advertiser_id: str
    contract_type: str
    revision: int
    version: int | None
    version_kind: str | None
    status: str
    actor: str
    occurred_at: datetime
    effective_at: datetime | None
    backdated: bool
    comment: str | None
    details_json: str


class TermsVersionRecord(TypedDict):
    """Avro record ``TermsVersion`` (nested)."""

    version: int
    effective_from: datetime
    effective_to: datetime | None
    approved_at: datetime
    terms_json: str


class ContractTermsRecord(TypedDict):
    """``contract_terms`` v1 (Compacted topic contracts.terms, key contract_id)."""

    contract_id: str
    advertiser_id: str
    contract_type: ContractType
    status: str
    terminated_at: datetime | None
    revision: int
    event_id: str
    versions: list[TermsVersionRecord]


class ConversionRecord(TypedDict):
    """``conversion`` v1 (ads.conversions, key household_id: a conversion or its reversal)."""

    conversion_id: str
    kind: ConversionKind
    order_id: str | None
    event_time: datetime
    advertiser_id: str
    household_id: str
    event_type: str
    value: Decimal | None
    currency: str | None
    source: ConversionSource
    partner_id: str | None
    reverses_conversion_id: str | None
    reversal_amount: Decimal | None


class ConversionOutcomeRecord(TypedDict):
    """``conversion_outcome`` v1 (billing.conversion_outcomes, key conversion_id)."""

    outcome_id: str
    conversion_id: str
    kind: OutcomeConversionKind
    outcome: OutcomeKind
    reason: RejectReason | None
    detail: str | None
    advertiser_id: str
    household_id: str
    event_type: str
    event_time: datetime
    order_id: str | None
    contract_id: str | None
    contract_version: int | None
    partner_id: str | None
    exposure_id: str | None
    exposure_time: datetime | None
    rule: str | None
    period_key: str | None
    currency: str | None
    advertiser_amount: Decimal | None
    partner_payout: Decimal | None
    original_conversion_id: str | None
    reversal_completes: bool | None
    source_topic: str
    source_partition: int
    source_offset: int
    decided_at: datetime


class DeadLetterRecord(TypedDict):
    """``dead_letter`` v2 (a record that could not be processed, with the reason and who refused it)."""

    source: str
    partition: int | None
    offset: int | None
    key: bytes | None
    value: bytes | None
    error_kind: str
    reason: str
    field: str | None
    failed_at: datetime
    consumer_group: str | None


class ImpressionRecord(TypedDict):
    """``impression`` v1 (ads.impressions, key household_id: one ad impression)."""

    impression_id: str
    event_time: datetime
    advertiser_id: str
    campaign_id: str
    partner_id: str | None
    household_id: str
    device_type: DeviceType
    ivt: IvtFlag
    measurement_source: MeasurementSource


class IvtEntryRecord(TypedDict):
    """Avro record ``IvtEntry`` (nested)."""

    campaign_id: str
    window_start: datetime
    window_end: datetime
    ivt_class: IvtClass
    measurement_source: IvtMeasurementSource
    count: int


class IvtReportRecord(TypedDict):
    """``ivt_report`` v1 (ads.ivt_reports: a vendor's counts of invalid impressions found later)."""

    report_id: str
    vendor: str
    advertiser_id: str
    entries: list[IvtEntryRecord]
    received_at: datetime


class IvtReportOutcomeRecord(TypedDict):
    """``ivt_report_outcome`` v1 (What metering did with one IVT report)."""

    report_id: str
    advertiser_id: str
    vendor: str
    status: IvtReportStatus
    reason: str | None
    campaign_id: str | None
    window_start: datetime | None
    window_end: datetime | None
    credited: int
    decided_at: datetime


class ContractStateRecord(TypedDict):
    """``metering_contract_state`` v1 (Internal)."""

    contract_id: str
    total_alerts: list[int]
    revision: int | None


class ConversionStateRecord(TypedDict):
    """``metering_conversion_state`` v1 (Internal)."""

    contract_id: str
    conversion_id: str
    kind: ConversionStateKind
    period_key: str
    version: int
    event_type: str
    partner_id: str | None
    advertiser_amount: str
    partner_payout: str
    reversed_amount: str
    reversed_payout: str
    fully_reversed: bool
    quantity: int
    decided_version: int
    decided_amount: str
    decided_payout: str
    event_us: int
    order_value: str | None
    tier_position: int | None
    original_conversion_id: str | None
    completes: bool | None


class DedupeIdsRecord(TypedDict):
    """``metering_dedupe_ids`` v1 (Internal)."""

    impression_ids: list[str]


class UsageDeltaRecord(TypedDict):
    """Avro record ``UsageDelta`` (nested)."""

    advertiser_id: str
    first_impression_id: str
    campaigns: list[str]
    ledger_classes: list[str]
    groups: bytes
    buckets: bytes
    counts: bytes


class ForwardedRecordRecord(TypedDict):
    """Avro record ``ForwardedRecord`` (nested)."""

    kind: ForwardedKind
    value: bytes


class MeteringDeltaRecord(TypedDict):
    """``metering_delta`` v1 (Internal)."""

    source_topic: str
    source_partition: int
    first_offset: int
    last_offset: int
    body: UsageDeltaRecord | ForwardedRecordRecord


class IvtDecisionRecord(TypedDict):
    """``metering_ivt_decision`` v1 (Internal)."""

    report_id: str
    status: IvtDecisionStatus


class LedgerRowRecord(TypedDict):
    """Avro record ``LedgerRow`` (nested)."""

    ledger_class: str
    counts: bytes


class LedgerDayRecord(TypedDict):
    """``metering_ledger_day`` v1 (Internal)."""

    advertiser_id: str
    campaign_id: str
    day: int
    classes: list[LedgerRowRecord]
    offsets: dict[str, int]
    max_event_us: int


class VersionImpressionsRecord(TypedDict):
    """Avro record ``VersionImpressions`` (nested)."""

    version: int
    impressions: int


class CpaSumRecord(TypedDict):
    """Avro record ``CpaSum`` (nested)."""

    quantity: int
    amount_exact: str


class PeriodTotalsRecord(TypedDict):
    """Avro record ``PeriodTotals`` (nested)."""

    counts: dict[str, int]
    in_scope_by_version: list[VersionImpressionsRecord]
    cpa: dict[str, CpaSumRecord]
    payouts: dict[str, CpaSumRecord]
    offsets: dict[str, int]
    max_event_us: int


class BilledLineRecord(TypedDict):
    """Avro record ``BilledLine`` (nested)."""

    line_type: str
    contract_version: int
    price_point: str
    quantity: int
    unit_price: str
    amount_exact: str


class PeriodStateRecord(TypedDict):
    """``metering_period_state`` v1 (Internal)."""

    contract_id: str
    period_key: str
    totals: PeriodTotalsRecord
    closed: bool
    closed_at_us: int | None
    alerts: list[str]
    billed: list[BilledLineRecord] | None


class PacingAlertRecord(TypedDict):
    """``pacing_alert`` v1 (billing.pacing_alerts, key contract_id)."""

    alert_id: str
    contract_id: str
    advertiser_id: str
    period_key: str
    state: PacingAlertState
    previous_state: PacingAlertState
    currency: str
    spend_exact: Decimal
    budget: Decimal | None
    expected_spend: Decimal | None
    pace_pct: Decimal | None
    projected_spend: Decimal | None
    projected_cap_at: datetime | None
    window_start: datetime
    window_end: datetime
    as_of: datetime
    emitted_at: datetime


class PeriodLineRecord(TypedDict):
    """Avro record ``PeriodLine`` (nested)."""

    line_type: PeriodLineType
    contract_version: int
    price_point: str
    event_type: str | None
    quantity: int
    unit: PriceUnit
    unit_price: Decimal
    amount_exact: Decimal


class PartnerPayoutLineRecord(TypedDict):
    """Avro record ``PartnerPayoutLine`` (nested)."""

    partner_id: str
    contract_version: int
    event_type: str
    quantity: int
    amount_exact: Decimal


class SourceOffsetRecord(TypedDict):
    """Avro record ``SourceOffset`` (nested)."""

    topic: str
    partition: int
    offset: int


class PeriodClosedRecord(TypedDict):
    """``period_closed`` v1 (billing.periods_closed, key contract_id)."""

    close_id: str
    contract_id: str
    advertiser_id: str
    contract_type: ClosedContractType
    currency: str
    time_zone: str
    period_kind: str
    period_key: str
    period_start: datetime
    period_end: datetime
    closed_at: datetime
    payment_terms_days: int
    po_reference: str | None
    minimum_commitment: Decimal | None
    lines: list[PeriodLineRecord]
    payouts: list[PartnerPayoutLineRecord]
    counts: dict[str, int]
    source_offsets: list[SourceOffsetRecord]


class RunningLineRecord(TypedDict):
    """Avro record ``RunningLine`` (nested)."""

    line_type: RunningLineType
    contract_version: int
    price_point: str
    event_type: str | None
    quantity: int
    unit: RunningPriceUnit
    unit_price: Decimal
    amount_exact: Decimal


class RunningTotalRecord(TypedDict):
    """``running_total`` v2 (billing.running_totals (compacted), key '<contract_id>/<period_key>')."""

    total_id: str
    contract_id: str
    advertiser_id: str
    contract_type: RunningContractType
    currency: str
    time_zone: str
    period_kind: str
    period_key: str
    period_start: datetime
    period_end: datetime
    status: RunningTotalStatus
    amount_exact: Decimal
    budget_cap_per_period: Decimal | None
    budget_cap_total: Decimal | None
    minimum_commitment: Decimal | None
    lines: list[RunningLineRecord]
    payouts: list[PartnerPayoutLineRecord]
    counts: dict[str, int]
    latest_event_time: datetime | None
    updated_at: datetime


#: the typed record of every schema's latest version, by catalog name
RECORDS: dict[str, type] = {
    "adjustment": AdjustmentRecord,
    "attributed_conversion": AttributedConversionRecord,
    "budget_alert": BudgetAlertRecord,
    "contract_event": ContractEventRecord,
    "contract_terms": ContractTermsRecord,
    "conversion": ConversionRecord,
    "conversion_outcome": ConversionOutcomeRecord,
    "dead_letter": DeadLetterRecord,
    "impression": ImpressionRecord,
    "ivt_report": IvtReportRecord,
    "ivt_report_outcome": IvtReportOutcomeRecord,
    "metering_contract_state": ContractStateRecord,
    "metering_conversion_state": ConversionStateRecord,
    "metering_dedupe_ids": DedupeIdsRecord,
    "metering_delta": MeteringDeltaRecord,
    "metering_ivt_decision": IvtDecisionRecord,
    "metering_ledger_day": LedgerDayRecord,
    "metering_period_state": PeriodStateRecord,
    "pacing_alert": PacingAlertRecord,
    "period_closed": PeriodClosedRecord,
    "running_total": RunningTotalRecord,
}
