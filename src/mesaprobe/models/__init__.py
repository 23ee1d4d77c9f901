"""Architecture families.  Adding one: a file here and one ``register`` line below."""

from mesaprobe.models.base import SequenceModel
from mesaprobe.models.linear_attention import LinearAttention
from mesaprobe.models.lru import LRU
from mesaprobe.models.mamba import Mamba
from mesaprobe.models.memoryless import Memoryless
from mesaprobe.models.recurrent import GRU, LSTM
from mesaprobe.models.transformer import Transformer
from mesaprobe.registry import Registry

ARCHITECTURES: Registry[type[SequenceModel]] = Registry("architecture family")
ARCHITECTURES.register("gru")(GRU)
ARCHITECTURES.register("lstm")(LSTM)
ARCHITECTURES.register("transformer")(Transformer)
ARCHITECTURES.register("memoryless")(Memoryless)
ARCHITECTURES.register("lru")(LRU)
ARCHITECTURES.register("mamba")(Mamba)
ARCHITECTURES.register("linear_attention")(LinearAttention)


def build_model(
    family: str, config, input_size: int, output_size: int, private_size: int = 0
) -> SequenceModel:
    return ARCHITECTURES.get(family)(config, input_size, output_size, private_size)


__all__ = ["ARCHITECTURES", "SequenceModel", "build_model"]
