"""Size-stratified COCO evaluation."""
