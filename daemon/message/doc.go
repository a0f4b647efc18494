// Package message compiles and renders campaign messages (DESIGN.md
// section 5, "Messages").
//
// Each variant of a campaign in the rules directory has up to three parts,
// set by these keys of the variant:
//
//	subject: an inline text/template, e.g. "We miss you, {{trait "first_name" "friend"}}"
//	html:    an html/template file, relative to the rules directory
//	text:    a text/template file, relative to the rules directory
//
// A variant with html and no text gets a text part derived from the HTML
// template (see HTMLToText): paragraphs become blank-line separated, links
// read "text (url)", entities are decoded and scripts and styles dropped;
// the template actions are kept, so the text part is rendered per message
// like the others.
//
// The dot is the customer's traits: {{.first_name}}. Templates run with
// missingkey=error, so a trait the customer lacks fails that message
// (Render returns a *RenderError naming the trait); write {{trait
// "first_name" "there"}} for a fallback. Inside {{range}} and {{with}} the
// dot is the current item: write $.first_name for a trait there. A number
// trait printed directly reads 1250000 or 19.99, a time 2026-03-01 and a
// list "a, b, c".
//
// Functions:
//
//	unsubscribe_url        the recipient's one-click unsubscribe link
//	postal_address         the sender's postal address (CAN-SPAM)
//	customer_id            the recipient's customer id
//	campaign, variant      the campaign's and variant's names
//	trait "name" fallback  the trait's value, or fallback when missing
//	default fallback x     x, or fallback when x is empty ("", 0, false, [])
//	upper, lower, title, trim
//	date "2006-01-02" t    a time in Go's layout
//	number 2 x             a number with 2 decimals
//	join ", " list         a list's items joined
//
// plus text/template's built-ins (if, range, with, eq, len, index, printf,
// ...). In the HTML part values are escaped for where they appear
// (html/template).
//
// Compile checks every template at load: a field that is not a trait of
// the schema, a syntax error, a missing file, or an escaping or type error
// found by rendering once with every trait present, each reported with the
// file, line and column (for a subject, the variant's place in the rules
// file and the line:col inside the subject), the campaign and variant.
// Set.CheckProfiles renders every variant for fixture customers.
package message
