"""Low-level rendering shared by tasks, explain and the report writer: HTML fragments (html), matplotlib figures
(plots) and the helpers of ``Task.report_samples`` (samples). Imports nothing of modelforge above ``core``."""
