"""Quality scoring against sources: PSNR, SSIM and VMAF via ffmpeg, bits per pixel, BD-rate."""
