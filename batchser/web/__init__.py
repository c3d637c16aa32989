"""What a person sees of a job: the review page (``batchser review``) and the report page (``report.html``).

Both render Jinja2 templates from ``templates/`` (one base layout and style);
the review page is served by Flask on 127.0.0.1 behind a random token, the
report page is one self-contained file written with the job's reports.
"""
