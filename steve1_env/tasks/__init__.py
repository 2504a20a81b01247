"""Task specs and built-in task sets, starting with the STEVE-1 paper's evaluation prompts."""
