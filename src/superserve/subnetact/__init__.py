"""SubNetAct: LayerSelect, WeightSlice and SubnetNorm over one weight-shared supernet.

Every conv / linear slices its one full weight tensor per call (WeightSlice), each stage or
transformer runs the layers the spec selects (LayerSelect), and BN statistics come per spec from
a NormStore (SubnetNorm). The MNIST supernets inline the slicing; `superserve.subnetact.ops`
holds the same operators as modules (SlicedConv2d, SlicedLinear, ElasticDepthwise, ConvBN) for
the OFA families and for a user's family (docs/models.md).
"""

from superserve.subnetact.norm import ElasticBN, NormContext, NormMode, NormStore
from superserve.subnetact.spec import (
    OFAMBv3Spec,
    OFAResNetSpec,
    ResNetSpec,
    Spec,
    SubnetSpec,
    ViTSpec,
    register_spec_type,
    spec_from_dict,
)

__all__ = ["ElasticBN", "NormContext", "NormMode", "NormStore", "OFAMBv3Spec", "OFAResNetSpec",
           "ResNetSpec", "Spec", "SubnetSpec", "ViTSpec", "calibrate", "materialize",
           "register_spec_type", "spec_from_dict"]


def calibrate(supernet, specs, images, n: int = 2000, seed: int = 0) -> None:
    """SubnetNorm calibration: store BN statistics of `specs` in `supernet.norm_store`."""
    supernet.calibrate(specs, images, n=n, seed=seed)


# imported first so that the function below, not the submodule, is the package's `materialize`
# (a first import of a submodule sets it as an attribute of its package)
from superserve.subnetact import materialize as _materialize_module


def materialize(supernet, spec):
    """A standalone static module computing supernet(x, spec) (supernet.materialize(spec))."""
    return _materialize_module.materialize(supernet, spec)
