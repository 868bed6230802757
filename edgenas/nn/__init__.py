"""Network building blocks: elastic layers (supernet) and static layers (subnets, exports)."""
from edgenas.nn.elastic import ElasticBatchNorm2d, ElasticDepthwise, ElasticMBConv, ElasticPointwise, ElasticSE
from edgenas.nn.static import MBConv, StaticNet, build_op

__all__ = ["ElasticBatchNorm2d", "ElasticDepthwise", "ElasticMBConv", "ElasticPointwise", "ElasticSE",
           "MBConv", "StaticNet", "build_op"]
