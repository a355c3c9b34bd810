#!/usr/bin/env python3
"""Stub of the app for tests/test_shell.py: records argv, pid and ppid as JSON in $STUB_APP."""
import json
import os
import sys

with open(os.environ["STUB_APP"], "w", encoding="utf-8") as f:
    json.dump({"argv": sys.argv[1:], "pid": os.getpid(), "ppid": os.getppid(),
               "model": os.environ.get("MODEL")}, f)
print("app: started")
