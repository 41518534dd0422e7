"""Where observations come from: IRSA's TAP service or a local / fsspec archive, with the
same query semantics; and fetching the files."""

from .fetch import FetchConfig, fetch
from .local import LocalArchive, mirror_path
from .observation import Observation
from .open import open_archive
from .query import ObservationSet, RegionQuery, TooManyImagesError

__all__ = ["FetchConfig", "LocalArchive", "Observation", "ObservationSet", "RegionQuery", "TooManyImagesError",
           "fetch", "mirror_path", "open_archive"]
