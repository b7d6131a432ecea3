"""C code for the convolution and pooling Ops (placeholder until written)."""

from pytensor.graph.utils import MethodNotDefined

C_CODE_VERSION = (0,)
SUPPORT_CODE = ""
INIT_CODE = ""


def conv_c_code(kind, node, name, inputs, outputs, sub):
    raise MethodNotDefined()


def pool_c_code(op, node, name, inputs, outputs, sub):
    raise MethodNotDefined()


def pool_grad_c_code(op, node, name, inputs, outputs, sub):
    raise MethodNotDefined()
