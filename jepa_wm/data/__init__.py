"""Rollout data: the on-disk store, its torch Dataset views, and collection."""

from jepa_wm.data.store import RolloutStore, RolloutWriter, space_from_dict, space_to_dict

__all__ = ["RolloutStore", "RolloutWriter", "space_from_dict", "space_to_dict"]
