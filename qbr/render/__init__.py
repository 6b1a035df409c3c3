"""Rendering for people: plans, status and verify reports, and the one size formatter."""
