"""The requisition form: items with quantities and unit prices and a computed total; the
route's approval rules depend on that total (a server rule adds purchasing above a
threshold). Filled in and viewed with the shared `wsemail.tui.formscreen.FormFillScreen`."""

from __future__ import annotations

from decimal import Decimal

from wsemail.core.forms.contract import Data, Field, FormPlugin


class Requisition(FormPlugin):
    """Requisition: items to buy and their total."""

    name = "requisition"
    version = "1.0.0"
    namespace = "urn:wsemail:forms:requisition:1"
    title = "Requisition"
    fields = (
        Field("requester", "address", "Requested by", required=True),
        Field("department", "text", "Department", required=True),
        Field("purpose", "text", "Purpose"),
        Field(
            "items",
            "table",
            "Items",
            required=True,
            columns=(
                Field("description", "text", "Description", required=True),
                Field("quantity", "int", "Quantity", required=True),
                Field("unit_price", "decimal", "Unit price", required=True),
            ),
        ),
        Field("total", "decimal", "Total", computed=True),
    )

    def check(self, data: Data) -> list[str]:
        problems = []
        for i, row in enumerate(data["items"], 1):
            if row["quantity"] is not None and row["quantity"] <= 0:
                problems.append(f"items row {i}: quantity must be positive")
            if row["unit_price"] is not None and row["unit_price"] < 0:
                problems.append(f"items row {i}: unit price must not be negative")
        return problems

    def compute(self, data: Data) -> Data:
        total = sum(
            (Decimal(row["quantity"]) * row["unit_price"] for row in data["items"]), Decimal(0)
        )
        return {"total": total.quantize(Decimal("0.01"))}
