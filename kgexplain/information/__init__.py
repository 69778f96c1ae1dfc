"""Per-pixel information discarding (Ma et al.): SID and RU maps and the concentration on the object."""

from kgexplain.information.measure import MapRecord, Measurement, measure, object_mask
from kgexplain.information.sid import SIDConfig, SIDEstimator, SIDResult, concentration

__all__ = [
    "MapRecord",
    "Measurement",
    "SIDConfig",
    "SIDEstimator",
    "SIDResult",
    "concentration",
    "measure",
    "object_mask",
]
