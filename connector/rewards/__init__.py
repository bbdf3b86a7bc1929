"""A rewards catalogue customers and managers claim for points, with tier perks."""
