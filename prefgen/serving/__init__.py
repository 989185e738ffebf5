"""Serving: image sets from a registered bundle, their gallery, and the nightly campaign's config, plan and units."""
