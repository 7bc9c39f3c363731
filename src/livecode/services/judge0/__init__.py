"""Judge0 CE 1.13.1 on top of LiveCode's services (the /judge0 API; api/judge0 serves it).

- catalog.py: language ids, the 14 statuses, /config_info, /about.
- serialize.py: a submission as Judge0 shows it (statuses mapped as Judge0's isolate_job.rb maps
  isolate's results; fields; base64 and the non-UTF-8 answer).
- params.py: a submission's body, checked as Judge0's submission.rb checks it (422, per field).
- submissions.py: create (a session of its own and an execution; the token is the execution id),
  read, list, delete.
"""
