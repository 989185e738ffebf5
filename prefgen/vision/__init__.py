"""Step 2 of the method: differentiable visual features of images (colour, style)."""
