; NOT YET VERIFIED: no Windows host in CI (docs/packaging.md). Inno Setup recipe for the PyInstaller bundle
; (packaging/pyinstaller/build.sh run on Windows: dist\pymachine\) plus QEMU for Windows, which the user
; installs from its own installer (WHPX acceleration needs the "Windows Hypervisor Platform" feature on).
; Build: iscc packaging\windows\pymachine.iss
; What is known not to work yet on Windows: the host agent serving the engine on the named pipe
; \\.\pipe\pymachine-NAME (the address and the docker context are computed, hostvm/endpoints.py; the serving
; side is unwritten), and the libvirt driver (use --driver qemu).

#define AppName "pymachine"
#define AppVersion "0.1.0"

[Setup]
AppId={{6B1C2F4E-9A57-4C1E-8E55-2F0B6B0D9A11}
AppName={#AppName}
AppVersion={#AppVersion}
DefaultDirName={autopf}\{#AppName}
DefaultGroupName={#AppName}
OutputBaseFilename=pymachine-{#AppVersion}-setup
Compression=lzma2
SolidCompression=yes
ArchitecturesInstallIn64BitMode=x64
ChangesEnvironment=yes
PrivilegesRequiredOverridesAllowed=dialog

[Files]
Source: "..\..\dist\pymachine\*"; DestDir: "{app}"; Flags: recursesubdirs createallsubdirs ignoreversion

[Icons]
Name: "{group}\pymachine"; Filename: "{app}\pymachine-gui.exe"
Name: "{userstartup}\pymachine"; Filename: "{app}\pymachine-gui.exe"; Tasks: startup

[Tasks]
Name: "path"; Description: "Add pymachine to PATH"
Name: "startup"; Description: "Start pymachine at login"; Flags: unchecked

[Registry]
Root: HKCU; Subkey: "Environment"; ValueType: expandsz; ValueName: "Path"; ValueData: "{olddata};{app}"; \
    Tasks: path; Check: NeedsAddPath(ExpandConstant('{app}'))

[Code]
function NeedsAddPath(Dir: string): Boolean;
var
  Paths: string;
begin
  if not RegQueryStringValue(HKCU, 'Environment', 'Path', Paths) then
    Paths := '';
  Result := Pos(';' + Uppercase(Dir) + ';', ';' + Uppercase(Paths) + ';') = 0;
end;
