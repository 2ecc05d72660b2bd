"""xaibench-weaksup: weak supervision for landslide segmentation (landslide datasets, CycleGAN) as xaibench plugins."""
