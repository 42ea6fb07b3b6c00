"""blastscope: leukemic blast (ALL) vs normal cell (HEM) classification with subject-level honest evaluation."""

__version__ = "0.1.0"
