"""Running studies: the processes behind ``metalab report`` (:mod:`metalab.studies.runner`)."""
