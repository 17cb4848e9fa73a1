"""The timesheet's own layout of the shared form screen: one line per weekday (the day is
fixed, not typed), regular / overtime / paid time off / code per day, totals computed live,
and "Autofill…" for the employee data. Registered as entry point `timesheet` in group
`wsemail.form_screens`, so headless code never loads Textual."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from textual.widget import Widget
from textual.widgets import Static

from wsemail.core.forms.contract import Field
from wsemail.tui.formscreen import FormFillScreen


class TimesheetScreen(FormFillScreen):
    """Fill in or view a timesheet: a fixed line per weekday."""

    def cell(self, table: Field, column: Field, index: int, value: object) -> Widget:
        if table.name == "days" and column.name == "day":
            return Static(
                "" if value is None else str(value),
                id=f"cell-{table.name}-{index}-{column.name}",
                classes="form-fixed",
                markup=False,
            )
        return super().cell(table, column, index, value)

    def growable(self, table: Field) -> bool:
        return table.name != "days"  # one line per weekday, no more

    def row_filled(self, table: Field, row: Mapping[str, Any]) -> bool:
        if table.name == "days":  # a weekday with no hours is not a row of the timesheet
            return any(key != "day" for key in row)
        return super().row_filled(table, row)
