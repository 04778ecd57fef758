-- opt-out-timeliness: every opt-out with when it was asked, published and honoured, and its findings (late, sent_after_opt_out)
SELECT business, contact_hash, channel, array_to_string(purposes, ';') AS purposes, asked_at, published_at,
       business_days_to_publish, deadline_business_days, first_message_at, first_message_category,
       messages_after_opt_out, array_to_string(findings, ', ') AS findings
FROM opt_out_timeliness
ORDER BY asked_at, business, contact_hash
