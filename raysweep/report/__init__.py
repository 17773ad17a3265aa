"""Analysis and views of sweep results."""
