"""Evaluation: metrics (pure functions), report writers (Markdown, JSON, visuallocalization.net) and plots.

No ROS imports: the same code scores an offline run over a dataset folder and an online run over a replayed
bag (the localizer's answers recorded into per-query results).
"""
