"""Whole experiments: the train -> embed -> classify -> t-SNE pipeline and its report."""
