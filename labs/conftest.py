"""pytest settings for ``pytest --nbval-lax labs/``: only the solution notebooks are executed.

``labs/student/`` holds the exercise versions, whose check cells fail on purpose until the exercises are done, and
``labs/src/`` holds the sources the solutions are generated from (running them again would only repeat the solutions).
tests/test_labs.py executes the student notebooks and checks that every check cell fails with its hint.
"""

collect_ignore = ["student", "src"]
