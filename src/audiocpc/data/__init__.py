"""Audio in: reading and resampling, the decoded-audio cache, the data scan, training crops, labels, the demo data."""
