"""Group-aware task submission on stock Ray (placeholder; see DESIGN.md)."""
