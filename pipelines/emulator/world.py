"""The emulator's ground truth: generated Accelerate invoices, Qvalia statuses and orders, and business days.

Everything is derived from one seed, so a test can compare what a pipeline loaded with what the APIs hold,
and move the world forward a business day at a time. It knows nothing about HTTP (that is `server.py`) and
nothing about the pipelines, so it cannot share their mistakes.
"""

from __future__ import annotations

import functools
import gc
import json
import random
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

LONDON = ZoneInfo("Europe/London")
CENT = Decimal("0.01")
ZERO = Decimal("0.00")
HUNDRED = Decimal(100)

FIRST_INVOICE_ID = 100_000
FIRST_INVOICE_LINE_ID = 1
HISTORY_DAYS = 120
SALES_SHARE = 0.7
QVALIA_KNOWN_SHARE = 0.8
DAILY_CHANGE_SHARE = 0.05
WORKDAY_START_S = 9 * 3600
WORKDAY_END_S = 17 * 3600 + 30 * 60
HISTORY_DAY_START_S = 8 * 3600
HISTORY_DAY_END_S = 18 * 3600

SEND_METHODS = ("peppol", "email", "print")
_WEIGHTED_SEND_METHODS = ("peppol",) * 5 + ("email",) * 4 + ("print",)
FINAL_QVALIA_STATUSES = frozenset({"paid", "cancelled"})
# Fields the API starts sending on the first and second business day after the world was generated: a
# schema that grows while the pipeline runs.
NEW_FIELDS_BY_ADVANCE: tuple[dict[str, Any], ...] = ({"currency_code": "GBP"}, {"payment_terms_days": 30})

# (payer_display_name, payer_property, payer_street, payer_locality, payer_town_city, payer_postcode)
PAYERS: tuple[tuple[str, str | None, str, str | None, str, str], ...] = (
    ("QV Systems", "Unit A, The Merton Centre", "45 St Peter's Street", None, "Bedford", "MK40 2FL"),
    ("Zoë Åberg Ltd", "Suite 4", "12 Harbour Road", "Leith", "Edinburgh", "EH6 6QN"),
    ("Ünïcödé 株式会社", "Floor 7", "1 Canada Square", "Canary Wharf", "London", "E14 5AB"),
    ("Crème Brûlée Cafés Ltd", None, "3 Rue Street", None, "Bristol", "BS1 4DJ"),
    ("O'Brien & Sons Haulage", "The Yard", "Dock Road", "Birkenhead", "Wirral", "CH41 1DH"),
    ('The "Quoted" Fleet Company', "2nd Floor", "88 Wood Street", None, "London", "EC2V 7RS"),
    ("Łódź Logistics Sp. z o.o.", "Unit 9", "Trafford Park Road", "Trafford Park", "Manchester", "M17 1HH"),
    ("Ørsted Fleet Services A/S", None, "5 Quayside", None, "Newcastle upon Tyne", "NE1 3DX"),
    ("Café ☕ Express Couriers", "Arch 12", "Lower Road", "Rotherhithe", "London", "SE16 2XB"),
    ("Müller Transport GmbH", "Hall B", "Brindley Drive", None, "Birmingham", "B1 2NB"),
    ("Αθηνά Rentals", None, "17 Castle Street", None, "Cardiff", "CF10 1BS"),
    ("Northwind Vans", "Unit 3", "Mill Lane", "Kempston", "Bedford", "MK42 7AX"),
    ("Acme Plant Hire Ltd", None, "Station Approach", None, "Leeds", "LS1 5DL"),
    ("Greenway Buses", "Depot 2", "Ring Road", "Seacroft", "Leeds", "LS14 1NH"),
    ("Bedford Car Hire", "Unit A", "45 St Peter's Street", None, "Bedford", "MK40 2FL"),
    ("Šťastný Leasing s.r.o.", "Building C", "Cromwell Road", None, "Cambridge", "CB1 3EG"),
)
USERS = (
    "example@qv.systems",
    "anna.jones@qv.systems",
    "raj.patel@qv.systems",
    "finance@qv.systems",
    "system@qv.systems",
)
TRANSACTION_TYPES = (
    "Rental",
    "Rental",
    "Rental",
    "Maintenance",
    "Excess Mileage",
    "Damage Recharge",
    "Insurance",
)
INVOICE_DESCRIPTIONS: tuple[str | None, ...] = (
    None,
    None,
    "Monthly rental",
    "Fleet maintenance 🔧",
    "Vehicle rental 🚗 October",
    "Excess mileage recharge",
    "Damage recharge – rear bumper",
    'Quote "Q-17" accepted',
    "Two-line\ndescription",
    "Backslash \\ and tab\tin text",
    "Zoë's invoice ✓",
)
LINE_DESCRIPTIONS = (
    "Monthly rental – Ford Transit (AB12 CDE)",
    "Maintenance package",
    "Excess mileage 1,250 mi @ 8p",
    "Damage recharge: rear bumper",
    "Admin fee",
    "Tyres 🛞 ×4",
    "Road fund licence",
    'Replacement key "spare"',
    "Valeting\nand inspection",
    "Ünïcödé 部品",
)
LINE_TEMPLATE_POOL_SIZE = 1024


class EmulatorError(Exception):
    """Base of the refusals the world makes; the server maps each to an HTTP status."""


class OrderNotFound(EmulatorError):
    """No incoming order has that id: the server answers 404."""


class OrderAlreadyInvoiced(EmulatorError):
    """The order already became an outgoing invoice: the server answers 409, so a retry cannot double-bill."""


class InvalidSendMethod(EmulatorError, ValueError):
    """The send method is not one Qvalia knows: the server answers 400."""


@dataclass
class DayChanges:
    """What one business day changed, so tests can check exactly those rows after the next run."""

    day: date
    paid: list[int] = field(default_factory=list)
    voided: list[int] = field(default_factory=list)
    lines_edited: list[int] = field(default_factory=list)
    lines_all_removed: list[int] = field(default_factory=list)
    created: list[int] = field(default_factory=list)
    removed_line_ids: list[int] = field(default_factory=list)
    added_line_ids: list[int] = field(default_factory=list)
    qvalia_status_changed: list[str] = field(default_factory=list)
    qvalia_became_known: list[str] = field(default_factory=list)
    new_fields: dict[str, Any] = field(default_factory=dict)

    @property
    def invoices_changed(self) -> list[int]:
        """Every Accelerate invoice whose last_update_date is on this day, in id order."""
        return sorted({*self.paid, *self.voided, *self.lines_edited, *self.lines_all_removed, *self.created})

    def describe(self) -> str:
        """One line for a demo or a log: the counts of each kind of change."""
        parts = [
            f"{len(self.paid)} paid",
            f"{len(self.voided)} voided",
            f"{len(self.lines_edited)} with lines edited",
            f"{len(self.lines_all_removed)} with all lines removed",
            f"{len(self.created)} created",
            f"{len(self.qvalia_status_changed)} Qvalia statuses moved on their own",
        ]
        if self.new_fields:
            parts.append("new fields " + ", ".join(sorted(self.new_fields)))
        return "; ".join(parts)


def local_iso(local: str) -> str:
    """A naive Europe/London wall-clock 'YYYY-MM-DD HH:MM:SS' as ISO 8601 with its offset (Qvalia's form)."""
    day, _, clock = local.partition(" ")
    if clock >= "03:00:00":  # past any DST switch of the day (01:00-02:00): the day's afternoon offset holds
        return f"{day}T{clock}{_afternoon_offset(day)}"
    return datetime.fromisoformat(local).replace(tzinfo=LONDON).isoformat(timespec="seconds")


@functools.cache
def _afternoon_offset(day: str) -> str:
    return datetime.fromisoformat(f"{day} 12:00:00").replace(tzinfo=LONDON).isoformat()[-6:]


# Every second of a day as "HH:MM:SS": formatting hundreds of thousands of timestamps is then a lookup.
_CLOCKS = tuple(f"{h:02d}:{m:02d}:{s:02d}" for h in range(24) for m in range(60) for s in range(60))


def _clock(seconds: int) -> str:
    return _CLOCKS[seconds % 86_400]


@functools.cache
def _plus_30_days(day: str) -> str:
    return (date.fromisoformat(day) + timedelta(days=30)).isoformat()


def _next_business_day(day: date) -> date:
    day += timedelta(days=1)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return day


def _money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def _same(value: Decimal) -> Decimal:
    return value


def _negate(value: Decimal) -> Decimal:
    """Negative for a credit note, but never '-0.00'."""
    return -value if value else value


class World:
    """Generated invoices, Qvalia statuses and orders, as the two APIs would serve them today.

    `invoices` holds each invoice exactly in the API's JSON shape (money as 2-dp Decimals, timestamps as
    naive London wall-clock strings). Every method that changes the world takes `lock` and bumps `version`,
    so a server can cache what it serialized; code that edits `invoices` by hand should call
    `mark_changed()`.
    """

    def __init__(
        self,
        seed: int = 1,
        invoices: int = 200,
        lines_per_invoice: int | None = None,
        today: date = date(2024, 10, 24),
    ) -> None:
        self.seed = seed
        self.today = today
        self.lines_per_invoice = lines_per_invoice
        self.lock = threading.RLock()
        self.version = 0
        self.hand_edits = 0
        self.invoices: dict[int, dict[str, Any]] = {}
        self.qvalia_statuses: dict[str, dict[str, Any]] = {}
        self.orders: dict[str, dict[str, Any]] = {}
        self.creations: Counter[str] = Counter()
        self.advances = 0
        self._rng = random.Random(seed)
        self._next_invoice_id = FIRST_INVOICE_ID
        self._next_line_id = FIRST_INVOICE_LINE_ID
        self._new_fields: dict[str, Any] = {}
        self._unknown_to_qvalia: list[str] = []
        self._line_templates, self._credit_line_templates = self._build_line_templates()
        collecting = gc.isenabled()
        gc.disable()  # millions of new long-lived objects: collecting them midway only costs time
        try:
            self._generate_history(invoices)
        finally:
            if collecting:
                gc.enable()
        self._generate_orders()

    # ---- reading -------------------------------------------------------------------------------------

    def invoices_since(self, since: date) -> list[dict[str, Any]]:
        """Invoices whose last_update_date falls on `since` or later (local date), in invoice_id order.

        This is the API's "since and including the supplied date": the date is compared with the local
        wall-clock date of last_update_date, so an invoice updated at 00:30 on that day is included.
        """
        first = since.isoformat()
        with self.lock:
            invoices = self.invoices
            return [
                invoices[invoice_id]
                for invoice_id in sorted(invoices)
                if invoices[invoice_id]["last_update_date"][:10] >= first
            ]

    def qvalia_status(self, integration_id: str) -> dict[str, Any] | None:
        """A copy of the outgoing invoice's status, or None where Qvalia would answer 404."""
        with self.lock:
            status = self.qvalia_statuses.get(integration_id)
            return dict(status) if status is not None else None

    @property
    def max_last_update_date(self) -> str:
        """The newest last_update_date in the world (what a pipeline's cursor should end at)."""
        with self.lock:
            return max(invoice["last_update_date"] for invoice in self.invoices.values())

    def mark_changed(self) -> None:
        """Tell servers their cached bodies are stale after `invoices` was edited by hand.

        Only needed for worlds of 10,000 invoices or more (smaller ones are never cached) and only for edits
        that leave last_update_date as it was.
        """
        with self.lock:
            self.version += 1
            self.hand_edits += 1

    # ---- changing --------------------------------------------------------------------------------------

    def advance_day(self) -> DayChanges:
        """Move to the next business day and apply that day's payments, voids, line edits and new invoices.

        About 5% of the invoices change (at least one of each kind when there are candidates), each stamped
        with a time between 09:00 and 17:30 that day. Some Qvalia statuses move with no Accelerate change,
        which only a pipeline that polls open statuses will notice.
        """
        with self.lock:
            rng = self._rng
            self.today = _next_business_day(self.today)
            day = self.today.isoformat()
            changes = DayChanges(day=self.today)
            if self.advances < len(NEW_FIELDS_BY_ADVANCE):
                changes.new_fields = dict(NEW_FIELDS_BY_ADVANCE[self.advances])
                self._new_fields.update(changes.new_fields)
            self.advances += 1

            budget = max(7, round(DAILY_CHANGE_SHARE * len(self.invoices)))
            open_ids = [
                invoice_id
                for invoice_id, invoice in self.invoices.items()
                if invoice["paid_date"] is None and invoice["void_date"] is None
            ]
            rng.shuffle(open_ids)
            used: set[int] = set()

            def pick(share: float, needs_lines: int) -> list[int]:
                wanted = max(1, round(budget * share))
                chosen: list[int] = []
                for invoice_id in open_ids:
                    if len(chosen) == wanted:
                        break
                    lines = self.invoices[invoice_id]["invoice_lines"]
                    if invoice_id not in used and len(lines or ()) >= needs_lines:
                        chosen.append(invoice_id)
                        used.add(invoice_id)
                return chosen

            all_removed = pick(0.05, needs_lines=1)
            line_removed = pick(0.10, needs_lines=2)
            line_changed = pick(0.10, needs_lines=1)
            line_added = pick(0.10, needs_lines=0)
            voided = pick(0.10, needs_lines=0)
            paid = pick(0.30, needs_lines=0)

            for invoice_id in all_removed:
                invoice = self.invoices[invoice_id]
                changes.removed_line_ids.extend(line["invoice_line_id"] for line in invoice["invoice_lines"])
                invoice["invoice_lines"] = []
                self._after_line_edit(invoice, day)
            for invoice_id in line_removed:
                invoice = self.invoices[invoice_id]
                lines = invoice["invoice_lines"]
                changes.removed_line_ids.append(lines.pop(rng.randrange(len(lines)))["invoice_line_id"])
                self._after_line_edit(invoice, day)
            for invoice_id in line_changed:
                invoice = self.invoices[invoice_id]
                line = rng.choice(invoice["invoice_lines"])
                line.update(self._line_amounts(credit=invoice["credit_invoice_id"] is not None))
                self._after_line_edit(invoice, day)
            for invoice_id in line_added:
                invoice = self.invoices[invoice_id]
                invoice["invoice_lines"] = list(invoice["invoice_lines"] or [])
                new_line = self._make_lines(1, credit=invoice["credit_invoice_id"] is not None)[0][0]
                invoice["invoice_lines"].append(new_line)
                changes.added_line_ids.append(new_line["invoice_line_id"])
                self._after_line_edit(invoice, day)
            changes.lines_edited = sorted([*line_removed, *line_changed, *line_added])
            changes.lines_all_removed = sorted(all_removed)

            for invoice_id in voided:
                invoice = self.invoices[invoice_id]
                stamp = self._stamp(invoice, day)
                invoice["void_date"] = day
                invoice["void_by"] = invoice["last_updated_by"]
                self._qvalia_follows(str(invoice_id), "cancelled", local_iso(stamp))
            changes.voided = sorted(voided)

            for invoice_id in paid:
                invoice = self.invoices[invoice_id]
                stamp = self._stamp(invoice, day)
                invoice["paid_date"] = day
                invoice["paid_by"] = invoice["last_updated_by"]
                invoice["paid_amount"] = _gross_total(invoice["invoice_lines"])
                self._qvalia_follows(str(invoice_id), "paid", local_iso(stamp))
            changes.paid = sorted(paid)

            for _ in range(max(1, round(budget * 0.15))):
                seconds = rng.randrange(WORKDAY_START_S, WORKDAY_END_S)
                stamp = f"{day} {_clock(seconds)}"
                invoice = self._add_generated(stamp, stamp)
                changes.created.append(invoice["invoice_id"])

            changes.qvalia_status_changed = self._move_qvalia_statuses(
                day, wanted=max(1, round(budget * 0.2)), untouched=used | set(changes.created)
            )
            changes.qvalia_became_known = self._make_known(day, wanted=max(1, round(budget * 0.05)))
            self.version += 1
            return changes

    def late_commit(self) -> int:
        """Amend one invoice and stamp it earlier than the newest last_update_date, on that same local date.

        This is a transaction that committed after a pipeline read past its timestamp: only a lookback (or
        re-reading the cursor's whole day) picks it up. Returns the invoice's id.
        """
        with self.lock:
            newest = self.max_last_update_date
            newest_at = datetime.fromisoformat(newest)
            midnight = newest_at.replace(hour=0, minute=0, second=0)
            stamp = max(newest_at - timedelta(hours=1), midnight).isoformat(sep=" ")
            candidates = [
                invoice_id
                for invoice_id, invoice in self.invoices.items()
                if invoice["last_update_date"] < stamp and invoice["void_date"] is None
            ] or [
                invoice_id
                for invoice_id, invoice in self.invoices.items()
                if invoice["last_update_date"] < newest
            ]
            if not candidates:
                candidates = list(self.invoices)
            invoice_id = self._rng.choice(candidates)
            invoice = self.invoices[invoice_id]
            invoice["description"] = "Corrected after a late commit ✏️"
            invoice["reference"] = f"LATE-{invoice_id}"
            invoice["payment_reference"] = f"QV{invoice_id}L"
            invoice["last_update_date"] = stamp
            invoice["last_updated_by"] = self._rng.choice(USERS)
            invoice.update(self._new_fields)
            self.version += 1
            return invoice_id

    def add_invoice(self, **overrides: Any) -> dict[str, Any]:
        """Add one generated invoice with `overrides` applied verbatim, and return it.

        Timestamps given are kept exactly; when only one of creation_date and last_update_date is given, the
        other takes the same value. When invoice_lines is given but net_amount is not, net_amount is their
        sum. A Sales invoice with a sent_date is known to Qvalia (status "sent"), so tests need no luck.
        """
        with self.lock:
            invoice_id = overrides.get("invoice_id", self._next_invoice_id)
            if invoice_id in self.invoices:
                raise ValueError(f"invoice {invoice_id} already exists")
            seconds = self._rng.randrange(WORKDAY_START_S, WORKDAY_END_S)
            default_stamp = f"{self.today.isoformat()} {_clock(seconds)}"
            created = overrides.get("creation_date", overrides.get("last_update_date", default_stamp))
            updated = overrides.get("last_update_date", created)
            sales = overrides.get("invoice_type", "Sales" if self._rng.random() < SALES_SHARE else "Purchase")
            invoice = self._make_invoice(invoice_id, created, updated, sales == "Sales")
            invoice.update(self._new_fields)
            invoice.update(overrides)
            if "invoice_lines" in overrides and "net_amount" not in overrides:
                invoice["net_amount"] = sum(
                    (Decimal(line.get("net_amount", 0)) for line in invoice["invoice_lines"] or ()), ZERO
                )
            self.invoices[invoice_id] = invoice
            self._next_invoice_id = max(self._next_invoice_id, invoice_id + 1)
            integration_id = str(invoice_id)
            if invoice.get("invoice_type") == "Sales" and invoice.get("sent_date"):
                clock = str(invoice.get("creation_date") or "")[11:19] or "09:00:00"
                self.qvalia_statuses[integration_id] = self._new_status(
                    invoice, "sent", sent_at=local_iso(f"{invoice['sent_date']} {clock}")
                )
            self.version += 1
            return invoice

    def create_invoice_from_order(self, order_id: str, send_method: str) -> dict[str, Any]:
        """Turn an incoming order into an outgoing invoice and send it, once.

        Returns the response's `data` object. A second call for the same order raises OrderAlreadyInvoiced
        (HTTP 409), an unknown order OrderNotFound (404), an unknown send method InvalidSendMethod (400).
        """
        with self.lock:
            order = self.orders.get(order_id)
            if order is None:
                raise OrderNotFound(f"Order {order_id} not found")
            if send_method not in SEND_METHODS:
                raise InvalidSendMethod(f"send method must be one of {', '.join(SEND_METHODS)}")
            if order_id in self.qvalia_statuses:
                raise OrderAlreadyInvoiced(f"Order {order_id} has already been invoiced")
            seconds = self._rng.randrange(WORKDAY_START_S, WORKDAY_END_S)
            sent_at = local_iso(f"{self.today.isoformat()} {_clock(seconds)}")
            status = self._new_status(None, "sent", sent_at=sent_at)
            status["order_number"] = order_id
            status["payment_reference"] = f"OCR{order_id.removeprefix('ORD-')}"
            status["send_method"] = send_method
            self.qvalia_statuses[order_id] = status
            self.creations[order_id] += 1
            self.version += 1
            ubl = {
                "Invoice": {
                    "ID": status["document_id"],
                    "IssueDate": self.today.isoformat(),
                    "OrderReference": {"ID": order_id},
                    "AccountingCustomerParty": {"Party": {"PartyName": {"Name": order["buyer_name"]}}},
                    "LegalMonetaryTotal": {"PayableAmount": str(order["payable_amount"])},
                    "InvoiceLine": [
                        {
                            "ID": str(position),
                            "InvoicedQuantity": str(line["quantity"]),
                            "Item": {"Name": line["description"]},
                            "Price": {"PriceAmount": str(line["unit_price"])},
                        }
                        for position, line in enumerate(order["lines"], start=1)
                    ],
                }
            }
            invoice_json = json.dumps(ubl, ensure_ascii=False, separators=(",", ":"))
            return {"message": "Invoice created and sent", "data": {"invoice": {"Invoice": invoice_json}}}

    # ---- generation ------------------------------------------------------------------------------------

    def _build_line_templates(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Precomputed line bodies (description and amounts, no id), and their credit-note negatives.

        A line is then one lookup and one small dict: a 100,000-invoice world builds in seconds.
        """
        rng = self._rng
        quantities = [Decimal("1.00")] * 6 + [
            Decimal(q) for q in ("2.00", "2.50", "0.50", "3.00", "12.00", "0.25", "7.00")
        ]
        rates = [Decimal("20.00")] * 17 + [Decimal("5.00")] * 2 + [Decimal("0.00")]
        templates: list[dict[str, Any]] = []
        credits: list[dict[str, Any]] = []
        for _ in range(LINE_TEMPLATE_POOL_SIZE):
            description = rng.choice(LINE_DESCRIPTIONS)
            quantity = rng.choice(quantities)
            unit_price = Decimal(rng.randrange(100, 250_000)).scaleb(-2)
            net = _money(quantity * unit_price)
            rate = rng.choice(rates)
            vat = _money(net * rate / HUNDRED)
            for pool, sign in ((templates, _same), (credits, _negate)):
                pool.append(
                    {
                        "description": description,
                        "quantity": quantity,
                        "unit_price": sign(unit_price),
                        "net_amount": sign(net),
                        "vat_rate": rate,
                        "vat_amount": sign(vat),
                        "gross_amount": sign(net + vat),
                    }
                )
        return templates, credits

    def _line_amounts(self, credit: bool) -> dict[str, Decimal]:
        """New amounts for an edited line (its id and description stay)."""
        pool = self._credit_line_templates if credit else self._line_templates
        template = pool[self._rng.randrange(len(pool))]
        return {name: value for name, value in template.items() if name != "description"}

    def _make_lines(self, count: int, credit: bool) -> tuple[list[dict[str, Any]], Decimal]:
        """`count` lines with fresh ids, and their net total."""
        pool = self._credit_line_templates if credit else self._line_templates
        random_ = self._rng.random
        size = len(pool)
        lines = []
        net_total = ZERO
        line_id = self._next_line_id
        for _ in range(count):
            template = pool[int(random_() * size)]
            lines.append({"invoice_line_id": line_id, **template})
            net_total += template["net_amount"]
            line_id += 1
        self._next_line_id = line_id
        return lines, net_total

    def _make_invoice(self, invoice_id: int, created: str, updated: str, sales: bool) -> dict[str, Any]:
        """One open invoice in the API's field order: the seed example's fields, then the attribute list's.

        Sales invoices are sent on the day they are raised (nine in ten); paying and voiding are applied by
        the caller, which knows when they happen.
        """
        rng = self._rng
        random_ = rng.random
        credit_of = None
        if sales and invoice_id > FIRST_INVOICE_ID + 10 and random_() < 0.03:
            credit_of = FIRST_INVOICE_ID + int(random_() * (invoice_id - FIRST_INVOICE_ID))
        count = self.lines_per_invoice if self.lines_per_invoice is not None else int(random_() * 7)
        lines, net_total = self._make_lines(count, credit=credit_of is not None)
        name, property_, street, locality, town, postcode = PAYERS[int(random_() * len(PAYERS))]
        user = USERS[int(random_() * len(USERS))]
        raised = created[:10]
        sent = sales and random_() < 0.9
        purchase_bank = not sales and random_() < 0.8
        transaction_type = TRANSACTION_TYPES[int(random_() * len(TRANSACTION_TYPES))]
        if credit_of is not None:
            transaction_type = "Credit Note"
        return {
            "invoice_id": invoice_id,
            "invoice_type": "Sales" if sales else "Purchase",
            "credit_invoice_id": credit_of,
            "external_reference": str(invoice_id - FIRST_INVOICE_ID + 1),
            "contract_id": 2000 + int(random_() * 8000) if random_() < 0.6 else None,
            "asset_id": 10_000 + int(random_() * 90_000) if random_() < 0.5 else None,
            "payer_display_name": name,
            "payer_property": property_,
            "payer_street": street,
            "payer_locality": locality,
            "payer_town_city": town,
            "payer_postcode": postcode,
            "tax_date": raised,
            "due_date": _plus_30_days(raised),
            "sent_date": raised if sent else None,
            "sent_by": user if sent else None,
            "paid_date": None,
            "paid_by": None,
            "void_date": None,
            "void_by": None,
            "paid_amount": 0,
            "payable_sort_code": "40-47-84" if purchase_bank else None,
            "payable_account_number": str(10**7 + int(random_() * 9 * 10**7)) if purchase_bank else None,
            "creation_date": created,
            "created_by": user,
            "last_update_date": updated,
            "last_updated_by": user,
            "invoice_lines": lines,
            "net_amount": net_total,
            "quote_id": 30_000 + int(random_() * 70_000),
            "type": transaction_type,
            "invoice_date": raised,
            "invoiced_by": user,
            "description": INVOICE_DESCRIPTIONS[int(random_() * len(INVOICE_DESCRIPTIONS))],
            "reference": f"REF-{invoice_id}" if random_() < 0.8 else None,
            "payment_reference": f"QV{invoice_id}" if random_() < 0.7 else None,
            "vat_rate": Decimal("0.00") if transaction_type == "Insurance" else Decimal("20.00"),
            "ipt_rate": Decimal("12.00") if transaction_type == "Insurance" else None,
        }

    def _generate_history(self, count: int) -> None:
        """`count` invoices raised over the HISTORY_DAYS before today, ids in creation order."""
        rng = self._rng
        random_ = rng.random
        first = self.today - timedelta(days=HISTORY_DAYS)
        days = [
            (first + timedelta(days=n)).isoformat()
            for n in range(HISTORY_DAYS + 1)
            if (first + timedelta(days=n)).weekday() < 5
        ]
        last = len(days) - 1
        span = HISTORY_DAY_END_S - HISTORY_DAY_START_S
        created_at = sorted(
            (int(random_() * len(days)), HISTORY_DAY_START_S + int(random_() * span)) for _ in range(count)
        )
        for day_index, seconds in created_at:
            created = f"{days[day_index]} {_clock(seconds)}"
            later = random_() < 0.55 and day_index < last
            if later:
                update_index = day_index + 1 + int(random_() * min(25, last - day_index))
                updated = f"{days[update_index]} {_clock(HISTORY_DAY_START_S + int(random_() * span))}"
            else:
                updated = f"{days[day_index]} {_clock(seconds + int(random_() * 900))}"
            invoice_id = self._next_invoice_id
            self._next_invoice_id += 1
            invoice = self._make_invoice(invoice_id, created, updated, random_() < SALES_SHARE)
            self.invoices[invoice_id] = invoice
            outcome = random_()
            if later and outcome < 0.45:
                invoice["paid_date"] = updated[:10]
                invoice["paid_by"] = invoice["last_updated_by"]
                invoice["paid_amount"] = _gross_total(invoice["invoice_lines"])
            elif later and outcome < 0.5:
                invoice["void_date"] = updated[:10]
                invoice["void_by"] = invoice["last_updated_by"]
            if invoice["sent_date"] is not None:
                self._history_status(invoice)

    def _history_status(self, invoice: dict[str, Any]) -> None:
        """The Qvalia status a sent Sales invoice has reached; one in five Qvalia does not know yet."""
        integration_id = str(invoice["invoice_id"])
        if self._rng.random() >= QVALIA_KNOWN_SHARE:
            self._unknown_to_qvalia.append(integration_id)
            return
        sent_at = local_iso(invoice["creation_date"])
        updated_at = local_iso(invoice["last_update_date"])
        if invoice["void_date"] is not None:
            status = self._new_status(invoice, "cancelled", sent_at=sent_at, cancelled_at=updated_at)
        elif invoice["paid_date"] is not None:
            status = self._new_status(invoice, "paid", sent_at=sent_at, paid_at=updated_at)
        else:
            roll = self._rng.random()
            if roll < 0.35:
                status = self._new_status(invoice, "sent", sent_at=sent_at)
            elif roll < 0.9:
                status = self._new_status(invoice, "delivered", sent_at=sent_at)
                if invoice["due_date"] < self.today.isoformat():
                    status["reminder"] = local_iso(f"{invoice['due_date']} 09:00:00")
            else:
                status = self._new_status(invoice, "paid", sent_at=sent_at, paid_at=updated_at)
        self.qvalia_statuses[integration_id] = status

    def _new_status(
        self,
        invoice: dict[str, Any] | None,
        status: str,
        sent_at: str | None = None,
        paid_at: str | None = None,
        cancelled_at: str | None = None,
    ) -> dict[str, Any]:
        rng = self._rng
        random_ = rng.random
        credit_of = invoice.get("credit_invoice_id") if invoice else None
        return {
            "document_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "order_number": f"PO-{10_000 + int(random_() * 90_000)}" if random_() < 0.5 else None,
            "payment_reference": invoice.get("payment_reference") if invoice else None,
            "credit_note": str(credit_of) if credit_of is not None else None,
            "reminder": None,
            "status": status,
            "sent_at": sent_at,
            "paid_at": paid_at,
            "cancelled_at": cancelled_at,
            "send_method": _WEIGHTED_SEND_METHODS[int(random_() * len(_WEIGHTED_SEND_METHODS))],
        }

    def _generate_orders(self) -> None:
        """A handful of incoming orders (ORD-5001...) waiting to be invoiced through Qvalia."""
        rng = self._rng
        for number in range(5001, 5006):
            order_lines = []
            for _ in range(rng.randrange(1, 4)):
                template = self._line_templates[rng.randrange(len(self._line_templates))]
                order_lines.append(
                    {name: template[name] for name in ("description", "quantity", "unit_price")}
                )
            self.orders[f"ORD-{number}"] = {
                "order_id": f"ORD-{number}",
                "buyer_name": PAYERS[rng.randrange(len(PAYERS))][0],
                "buyer_endpoint_id": f"0007:{rng.randrange(10**9, 10**10)}",
                "issue_date": (self.today - timedelta(days=rng.randrange(1, 10))).isoformat(),
                "lines": order_lines,
                "payable_amount": sum(
                    (_money(line["quantity"] * line["unit_price"]) for line in order_lines), ZERO
                ),
            }

    # ---- business-day helpers --------------------------------------------------------------------------

    def _stamp(self, invoice: dict[str, Any], day: str) -> str:
        """Record an edit made today: a working-hours timestamp, the editor, and today's new fields."""
        stamp = f"{day} {_clock(self._rng.randrange(WORKDAY_START_S, WORKDAY_END_S))}"
        invoice["last_update_date"] = stamp
        invoice["last_updated_by"] = self._rng.choice(USERS)
        invoice.update(self._new_fields)
        return stamp

    def _after_line_edit(self, invoice: dict[str, Any], day: str) -> None:
        invoice["net_amount"] = sum(
            (line.get("net_amount") or ZERO for line in invoice["invoice_lines"]), ZERO
        )
        self._stamp(invoice, day)

    def _add_generated(self, created: str, updated: str) -> dict[str, Any]:
        invoice_id = self._next_invoice_id
        self._next_invoice_id += 1
        invoice = self._make_invoice(invoice_id, created, updated, self._rng.random() < SALES_SHARE)
        invoice.update(self._new_fields)
        self.invoices[invoice_id] = invoice
        if invoice["sent_date"] is not None:
            integration_id = str(invoice_id)
            if self._rng.random() < QVALIA_KNOWN_SHARE:
                self.qvalia_statuses[integration_id] = self._new_status(
                    invoice, "sent", sent_at=local_iso(created)
                )
            else:
                self._unknown_to_qvalia.append(integration_id)
        return invoice

    def _qvalia_follows(self, integration_id: str, status: str, at: str) -> None:
        """Accelerate paid or voided the invoice: Qvalia's open status follows, a final one stays."""
        current = self.qvalia_statuses.get(integration_id)
        if current is None or current["status"] in FINAL_QVALIA_STATUSES:
            return
        current["status"] = status
        current["paid_at" if status == "paid" else "cancelled_at"] = at

    def _move_qvalia_statuses(self, day: str, wanted: int, untouched: set[int]) -> list[str]:
        """Move open statuses of invoices Accelerate left alone today: sent → delivered → paid|cancelled."""
        rng = self._rng
        candidates = [
            integration_id
            for integration_id, status in self.qvalia_statuses.items()
            if status["status"] not in FINAL_QVALIA_STATUSES
            and not (integration_id.isdigit() and int(integration_id) in untouched)
        ]
        moved = rng.sample(candidates, min(wanted, len(candidates)))
        for integration_id in moved:
            status = self.qvalia_statuses[integration_id]
            at = local_iso(f"{day} {_clock(rng.randrange(WORKDAY_START_S, WORKDAY_END_S))}")
            if status["status"] == "sent":
                status["status"] = "delivered"
            elif rng.random() < 0.8:
                status["status"] = "paid"
                status["paid_at"] = at
            else:
                status["status"] = "cancelled"
                status["cancelled_at"] = at
        return sorted(moved, key=_id_order)

    def _make_known(self, day: str, wanted: int) -> list[str]:
        """Some sent invoices Qvalia did not know reach it: they start answering instead of 404."""
        rng = self._rng
        known: list[str] = []
        for _ in range(min(wanted, len(self._unknown_to_qvalia))):
            integration_id = self._unknown_to_qvalia.pop(rng.randrange(len(self._unknown_to_qvalia)))
            invoice = self.invoices.get(int(integration_id))
            if invoice is None:
                continue
            sent_at = local_iso(invoice["creation_date"])
            at = local_iso(f"{day} {_clock(rng.randrange(WORKDAY_START_S, WORKDAY_END_S))}")
            if invoice["void_date"] is not None:
                status = self._new_status(invoice, "cancelled", sent_at=sent_at, cancelled_at=at)
            elif invoice["paid_date"] is not None:
                status = self._new_status(invoice, "paid", sent_at=sent_at, paid_at=at)
            else:
                status = self._new_status(invoice, "delivered", sent_at=sent_at)
            self.qvalia_statuses[integration_id] = status
            known.append(integration_id)
        return sorted(known, key=_id_order)


def _gross_total(lines: list[dict[str, Any]] | None) -> Decimal:
    """What paying an invoice in full means: the sum of its lines' gross amounts (0.00 with no lines)."""
    return sum((line["gross_amount"] for line in lines or ()), ZERO)


def _id_order(integration_id: str) -> tuple[int, str]:
    """Numeric ids in numeric order (they are all digits unless they are order ids)."""
    return len(integration_id), integration_id
