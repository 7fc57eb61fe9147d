"""SubNetAct: LayerSelect, WeightSlice and SubnetNorm over one weight-shared supernet.

The operators live in the supernets themselves (superserve.models): every conv / linear slices
its one full weight tensor per call (WeightSlice), each stage or transformer runs the layers the
spec selects (LayerSelect), and BN statistics come per spec from a NormStore (SubnetNorm).
"""

from superserve.subnetact.norm import NormContext, NormMode, NormStore
from superserve.subnetact.spec import ResNetSpec, SubnetSpec, ViTSpec, spec_from_dict

__all__ = ["NormContext", "NormMode", "NormStore", "ResNetSpec", "SubnetSpec", "ViTSpec",
           "calibrate", "materialize", "spec_from_dict"]


def calibrate(supernet, specs, images, n: int = 2000, seed: int = 0) -> None:
    """SubnetNorm calibration: store BN statistics of `specs` in `supernet.norm_store`."""
    supernet.calibrate(specs, images, n=n, seed=seed)


def materialize(supernet, spec):
    from superserve.subnetact.materialize import materialize as _m

    return _m(supernet, spec)
