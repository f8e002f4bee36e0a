"""Share: open data without exposing people.

The dataset catalogue (:mod:`.catalog`) declares every field's sensitivity; views
(:mod:`.views`) are the only way rows leave for an audience, through per-field
transforms (:mod:`.transform`), PII recognition in free text (:mod:`.pii`), keyed
pseudonyms (:mod:`.keys`), k-anonymity (:mod:`.kanon`) and differentially private
counts with a budget (:mod:`.dp`). Reads of personal data go to a hash-chained access
log (:mod:`.audit`); :mod:`.erase` removes a person from everything their data reached.
"""

from cityvitals.share.audit import record as record_access, verify as verify_access_log
from cityvitals.share.catalog import AUDIENCES, CLASSES, TIERS, Dataset, Field, catalogue, catalogue_json, get_dataset
from cityvitals.share.erase import erase_person
from cityvitals.share.export import FORMATS, export_dataset, release_aggregate
from cityvitals.share.keys import KeyRing
from cityvitals.share.pii import Hit, find_pii, redact_texts, valid_resident_id
from cityvitals.share.views import View, view

__all__ = [
    "AUDIENCES", "CLASSES", "FORMATS", "TIERS", "Dataset", "Field", "Hit", "KeyRing", "View", "catalogue",
    "catalogue_json", "erase_person", "export_dataset", "find_pii", "get_dataset", "record_access", "redact_texts",
    "release_aggregate", "valid_resident_id", "verify_access_log", "view",
]
