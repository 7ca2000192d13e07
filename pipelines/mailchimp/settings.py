"""Mailchimp Marketing API v3 endpoints, page sizes and the fields mailbridge reads."""

DEFAULT_BASE_URL = "https://{dc}.api.mailchimp.com/3.0"
MAX_PAGE_SIZE = 1000
MAX_CONNECTIONS = 10
# reads of a paged collection that drifted (changed between page reads) before one fails
MAX_READ_PASSES = 3

LISTS_PATH = "lists"
MEMBERS_PATH = "lists/{list_id}/members"
CAMPAIGNS_PATH = "campaigns"
REPORT_PATH = "reports/{campaign_id}"
EMAIL_ACTIVITY_PATH = "reports/{campaign_id}/email-activity"
SENT_TO_PATH = "reports/{campaign_id}/sent-to"
UNSUBSCRIBED_PATH = "reports/{campaign_id}/unsubscribed"
ABUSE_REPORTS_PATH = "reports/{campaign_id}/abuse-reports"

MEMBER_FIELDS = (
    "id",
    "email_address",
    "unique_email_id",
    "contact_id",
    "status",
    "merge_fields",
    "tags",
    "language",
    "ip_signup",
    "timestamp_signup",
    "ip_opt",
    "timestamp_opt",
    "last_changed",
    "unsubscribe_reason",
    "list_id",
    "member_rating",
)
