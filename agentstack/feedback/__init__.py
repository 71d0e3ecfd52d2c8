"""Thumbs feedback: the store (one vote per user per response), PII scrubbing on the way out,
export, and the privacy operations (user deletion, retention).

* ``store.FeedbackStore``: ``vote``, ``voted`` (votes joined with their responses), ``siblings``, ``stats``;
* ``scrub.TextScrubber``: the PII gate every exported or trained-on text passes;
* ``export.export_records``: scrubbed JSONL records;
* ``privacy.delete_user_data`` / ``purge_expired``.

The preference builder that turns votes into training data is ``agentstack.alignment.preferences``.
"""

from agentstack.feedback.store import RATINGS, Feedback, FeedbackStore, Voted

__all__ = ["RATINGS", "Feedback", "FeedbackStore", "Voted"]
