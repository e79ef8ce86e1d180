"""Jobs: sample, augment, anonymize; each a short configuration of the synthesis engine."""
