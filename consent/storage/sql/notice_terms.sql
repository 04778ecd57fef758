-- notice_terms: what the state machine needs of every registered notice.
SELECT notice_version, purposes, valid_from, valid_until, names_business, mentions_whatsapp, says_how_to_opt_out, business
FROM consent_notices;
