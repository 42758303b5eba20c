"""Plain ``nn.Module``s: Ha's conv encoder/decoder, any timm encoder, the JEPA predictor."""

from jepa_wm.nets.conv import ConvDecoder, ConvEncoder
from jepa_wm.nets.predictor import Predictor
from jepa_wm.nets.timm_encoder import TimmEncoder

__all__ = ["ConvDecoder", "ConvEncoder", "Predictor", "TimmEncoder"]
