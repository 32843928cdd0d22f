"""Numbers to pages: report.md and a self-contained report.html."""
