"""paddlecls-q: quantize PaddleClas classifiers to INT8, deploy them and measure what INT8 bought."""

import os
import warnings

# Paddle 3.x saves and loads PIR `.json` programs unless this is off before paddle is imported;
# the quantization tools and the published tarballs use the legacy `.pdmodel` format.
os.environ.setdefault("FLAGS_enable_pir_api", "0")

# Paddle warns about a missing C++ compiler cache on every import; it concerns building extensions only.
warnings.filterwarnings("ignore", message="No ccache found")

__version__ = "0.1.0"
