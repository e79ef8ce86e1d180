"""De-identification of what synthkit writes.

* :mod:`.outputs`: fresh opaque case ids, the input->output mapping (only outside the output),
  scrubbed NIfTI files, an output geometry that is not the source's;
* :mod:`.dicom_export`: DICOM series built from scratch under the PS3.15 Basic Application Level
  Confidentiality Profile (passes dicom3tools' ``dciodvfy``);
* :mod:`.identifiers`: every identifier of an input cohort collected (failing closed on an
  unreadable file), and the scan of every output path and byte for them.
"""
