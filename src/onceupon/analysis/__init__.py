"""Analysis: data-efficiency equivalence, plots and the HTML report."""
