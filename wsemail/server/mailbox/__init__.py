"""In charge of the mailbox a user lives in (issue 17): folders (inbox, sent, Archive,
Drafts, Trash and the user's own), moving, flags, Trash with its age limit, and search.

    names        the rules for a folder name
    query        the search language, parsed strictly into a `Query`
    records      every SQL string of the feature (tables in store.py migration 6)
    operations   the SOAP operations (ListFolders, CreateFolder, RenameFolder,
                 DeleteFolder, Move, SetFlags, Search) and the Trash step of Delete
    maintenance  emptying Trash of what has been there longer than `trash_days`
"""
