"""The 3D conditional U-Net denoiser of Med-DDPM and its building blocks.

``build_denoiser(preset, image_channels, mask_classes)`` builds the network; the network takes
``in_channels = image channels + mask classes (background dropped)``.
"""

from synthkit.networks.unet import Denoiser3D, build_denoiser, count_parameters

__all__ = ["Denoiser3D", "build_denoiser", "count_parameters"]
