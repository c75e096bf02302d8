"""Microsoft Teams presence both ways: a source (Teams -> astpresence) and a target
(astpresence -> Teams) over Microsoft Graph. docs/teams.md says what each side shows."""
