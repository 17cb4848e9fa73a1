"""The timesheet form (paper Figure 6): employee data, hours per day split into regular,
overtime and paid time off, with computed totals; signed off by employee and supervisor."""

from __future__ import annotations

from decimal import Decimal

from wsemail.core.forms.contract import Data, Field, FormPlugin

DAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")


def _sum(rows: list[Data], column: str) -> Decimal:
    return sum((row.get(column) or Decimal(0) for row in rows), Decimal(0))


class Timesheet(FormPlugin):
    """Timesheet: hours worked per day and their totals."""

    name = "timesheet"
    version = "1.0.0"
    namespace = "urn:wsemail:forms:timesheet:1"
    title = "Timesheet"
    autofill = True  # employee data from the own organisation's Autofill service
    fields = (
        Field("employee", "text", "Name", required=True),
        Field("employee_id", "text", "ID number", required=True),
        Field("job_title", "text", "Title"),
        Field("department", "text", "Department"),
        Field("period_ending", "date", "Pay period ending", required=True),
        Field("scheduled_hours", "int", "Scheduled hours"),
        Field(
            "days",
            "table",
            "Hours worked",
            required=True,
            columns=(
                Field("day", "text", "Day", required=True),
                Field("regular", "decimal", "Regular"),
                Field("overtime", "decimal", "Overtime"),
                Field("paid_time_off", "decimal", "Paid time off"),
                Field("code", "text", "Code"),
            ),
        ),
        Field("total_regular", "decimal", "Regular hours", computed=True),
        Field("total_overtime", "decimal", "Overtime hours", computed=True),
        Field("total_paid_time_off", "decimal", "Paid time off hours", computed=True),
        Field("total_hours", "decimal", "Total hours", computed=True),
    )

    def check(self, data: Data) -> list[str]:
        problems = []
        rows: list[Data] = data["days"]
        seen = [row["day"] for row in rows]
        if any(day not in DAYS for day in seen) or len(set(seen)) != len(seen):
            problems.append(f"days must be distinct names among {', '.join(DAYS)}")
        for row in rows:
            for column in ("regular", "overtime", "paid_time_off"):
                value = row.get(column)
                if value is not None and not Decimal(0) <= value <= Decimal(24):
                    problems.append(f"{row['day']} {column} must be between 0 and 24 hours")
        return problems

    def rows(self, table: str) -> list[Data]:
        return [{"day": day} for day in DAYS] if table == "days" else []

    def compute(self, data: Data) -> Data:
        rows: list[Data] = data["days"]
        regular, overtime, pto = (_sum(rows, c) for c in ("regular", "overtime", "paid_time_off"))
        return {
            "total_regular": regular,
            "total_overtime": overtime,
            "total_paid_time_off": pto,
            "total_hours": regular + overtime + pto,
        }
