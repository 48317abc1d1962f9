"""Team and key budgets: reserve at admission, settle or refund at the end (issue 5)."""
