"""The teacher: a rubric, a backend that answers it, and a parser that never invents a number."""
