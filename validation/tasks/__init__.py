"""The paper's experiments: one module per task with its data, its model and its loss/metric (docs/paper.md §3)."""
