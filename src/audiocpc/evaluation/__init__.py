"""Using a trained model: embeddings, the MFCC baseline, probes and classification, t-SNE, plots."""
