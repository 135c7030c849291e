"""Evaluation beside the data path: datasets with ground truth go through the same
Segmenter, and masks, recognition and a simulated control loop are scored."""
