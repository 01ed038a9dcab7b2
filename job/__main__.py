"""python -m job: the job's command line (job.cli)."""

from job.cli import console_main

if __name__ == "__main__":  # workers start with spawn and re-import __main__
    console_main()
